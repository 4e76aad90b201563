"""The Linux SGX driver (arch/x86/kernel/cpu/sgx) and the kernel services it relies on."""
