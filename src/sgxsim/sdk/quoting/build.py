"""Building and loading the quoting/application enclaves: image, SIGSTRUCT, PROVISIONKEY.

Each enclave is built with :func:`sgxsim.sdk.image.standard_image`, signed with
:func:`sgxsim.sdk.sign.sign_enclave` (production signing: DEBUG, MODE64BIT and PROVISIONKEY
exactly as signed) and loaded through the driver (:func:`sgxsim.sdk.loader.load_enclave`, with
``SGX_IOC_ENCLAVE_PROVISION`` when it needs PROVISIONKEY; EINIT is refused with EACCES otherwise).
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric import rsa

from sgxsim.errors import InvalidArgument
from sgxsim.hw.arch import (
    Attributes,
    Sigstruct,
)
from sgxsim.hw.crypto import mrsigner
from sgxsim.kernel.process import Process
from sgxsim.sdk.image import EnclaveImage, standard_image
from sgxsim.sdk.loader import Enclave, load_enclave
from sgxsim.sdk.quoting.ecall import check_svn
from sgxsim.sdk.sign import bcd_date, sign_enclave

__all__ = [
    "INTEL_AE_VENDOR",
    "EnclaveBuild",
    "build_enclave",
    "load_build",
]

#: SIGSTRUCT.VENDOR of Intel's architectural enclaves.
INTEL_AE_VENDOR = 0x8086


@dataclass(frozen=True)
class EnclaveBuild:
    """An enclave as shipped: its image, its signed SIGSTRUCT, and whether it needs PROVISIONKEY."""

    name: str
    image: EnclaveImage
    sigstruct: Sigstruct
    provision: bool

    @property
    def mrenclave(self) -> bytes:
        return self.sigstruct.mrenclave

    @property
    def mrsigner(self) -> bytes:
        return mrsigner(self.sigstruct.modulus)

    @property
    def isvprodid(self) -> int:
        return self.sigstruct.isvprodid

    @property
    def isvsvn(self) -> int:
        return self.sigstruct.isvsvn

    @property
    def secs_attributes(self) -> int:
        """SECS.ATTRIBUTES while the enclave runs (INIT set by EINIT)."""
        return self.image.attributes | int(Attributes.INIT)


def build_enclave(
    name: str,
    source: str,
    key: rsa.RSAPrivateKey,
    *,
    provision: bool,
    isvprodid: int,
    isvsvn: int,
    vendor: int,
    debug: bool = False,
) -> EnclaveBuild:
    attributes = int(Attributes.MODE64BIT)
    if provision:
        attributes |= int(Attributes.PROVISIONKEY)
    if debug:
        attributes |= int(Attributes.DEBUG)
    image = standard_image(source, heap_size=0, attributes=attributes)
    sig = sign_enclave(
        image,
        key,
        vendor=vendor,
        date=bcd_date(2025, 1, 1),
        attributes=attributes,
        # Production signing: DEBUG, MODE64BIT and PROVISIONKEY must be exactly as signed.
        attributes_mask=int(Attributes.DEBUG | Attributes.MODE64BIT | Attributes.PROVISIONKEY),
        isvprodid=check_svn("isvprodid", isvprodid),
        isvsvn=check_svn("isvsvn", isvsvn),
    )
    return EnclaveBuild(name, image, sig, provision)


def load_build(proc: Process, build: EnclaveBuild) -> Enclave:
    if not isinstance(proc, Process):
        raise InvalidArgument(f"proc must be a Process, got {type(proc).__name__}")
    if not isinstance(build, EnclaveBuild):
        raise InvalidArgument(f"build must be an EnclaveBuild, got {type(build).__name__}")
    return load_enclave(proc, build.image, sigstruct=build.sigstruct, provision=build.provision)
