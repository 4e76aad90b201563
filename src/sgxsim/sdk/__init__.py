"""User space: enclave images, the SIGSTRUCT signer, the ioctl loader and in-enclave helpers.

* :mod:`sgxsim.sdk.image` -- segments, enclave size, TCS contents, offline MRENCLAVE;
* :mod:`sgxsim.sdk.sign` -- SIGSTRUCT for an image, RSA-3072 e=3 keys (PEM or seeded);
* :mod:`sgxsim.sdk.loader` -- open/CREATE/ADD_PAGES/INIT/mmap as the kernel selftests do;
* :mod:`sgxsim.sdk.runtime` -- link-time constants and helpers for enclave programs;
* :mod:`sgxsim.sdk.test_encl` -- the kernel selftest enclave.

Layering: imports :mod:`sgxsim.kernel` and :mod:`sgxsim.hw` only (never ``sim`` or ``cli``).
"""
