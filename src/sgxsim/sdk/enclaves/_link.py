"""The names an enclave program gets from its linker, for the host's view of the enclave modules.

Never loaded into an enclave. :func:`sgxsim.sdk.runtime.link_program` prepends the link-time
constants (``ENCL_*``) to a program; the quoting enclaves' shared code also uses a name each
enclave's own module defines after it (``INVALID_PARAMETER``). The enclave modules import them
from here only on the host (``if __name__ != "enclave":``, a block the engine's namespace skips),
so mypy knows their types and a host import of a module works. The values are placeholders:
inside an enclave the linker's (or the enclave module's) values apply.
"""

#: Enclave offset of the running program image (``lea __encl_base(%rip)``).
ENCL_SELF: int = 0
#: Enclave offsets of the SSA frames, stacks, data and heap of a standard image.
ENCL_SSA: int = 0
ENCL_STACK: int = 0
ENCL_DATA: int = 0
ENCL_HEAP: int = 0
ENCL_HEAP_SIZE: int = 0
ENCL_THREADS: int = 0
#: The selftest enclave: entered through ``encl_dyn_entry``; offset of ``encl_buffer``.
ENCL_DYN: bool = False
ENCL_BUFFER: int = 0
#: The status a quoting/application enclave returns for a bad parameter (its own module's value).
INVALID_PARAMETER: int = 0
