"""The platform's quoting enclaves (PCE and QE), an attestable application enclave, and their host calls.

Three enclaves of the simulation, each Python source run by the enclave engine
(:mod:`sgxsim.hw.enclu`). Modules, one reason to change each:

* :mod:`~sgxsim.sdk.quoting.ecall` -- the call block, statuses and errors every enclave shares;
* :mod:`~sgxsim.sdk.quoting.build` -- image, SIGSTRUCT and load of an enclave build;
* :mod:`~sgxsim.sdk.quoting.host` -- the untrusted call path (the URTS's role);
* :mod:`~sgxsim.sdk.quoting.provisioning` -- PCK / attestation-key derivations, certification data;
* :mod:`~sgxsim.sdk.quoting.pce` -- the Provisioning Certification Enclave;
* :mod:`~sgxsim.sdk.quoting.qe` -- the Quoting Enclave (QE3);
* :mod:`~sgxsim.sdk.quoting.app` -- the attestable application enclave (REPORT, seal, unseal).

[MODEL] In-enclave programs import only ``hashlib`` and ``cryptography`` (statically linked
crypto).

Models: intel/SGXDataCenterAttestationPrimitives QuoteGeneration, intel/linux-sgx ``sgx_tseal``,
``sgx_error.h`` (details and differences in each module).
"""

from __future__ import annotations

from sgxsim.sdk.quoting.app import (
    APP_SOURCE,
    SEALED_DATA_HEADER_SIZE,
    AppEnclave,
    Attestable,
    build_app,
    load_app,
)
from sgxsim.sdk.quoting.build import INTEL_AE_VENDOR, EnclaveBuild
from sgxsim.sdk.quoting.ecall import (
    AeCallError,
    AeFunction,
    EnclaveLost,
    PceError,
    Quote3Error,
    SgxError,
    ae_call,
)
from sgxsim.sdk.quoting.host import target_info_of
from sgxsim.sdk.quoting.pce import (
    PCE_ISVPRODID,
    PCE_ISVSVN,
    PCE_PROVISION_KEY_ATTRIBUTEMASK,
    PCE_PROVISION_KEY_MISCMASK,
    PCE_PROVISION_KEY_XFRMMASK,
    PCE_SOURCE,
    PceInfo,
    ProvisioningCertificationEnclave,
    build_pce,
    load_pce,
)
from sgxsim.sdk.quoting.provisioning import (
    KDF_SOURCE,
    PAK_LABEL,
    PSVN_SIZE,
    QE_ATT_LABEL,
    certification_data,
    p256_scalar_from_key,
    pck_private_key,
    ppid_from_provision_key,
)
from sgxsim.sdk.quoting.qe import (
    DEFAULT_QE_AUTH_DATA,
    QE_ISVPRODID,
    QE_ISVSVN,
    QE_SOURCE,
    QeInit,
    QuotingEnclave,
    build_qe,
    load_qe,
)

__all__ = [
    "APP_SOURCE",
    "DEFAULT_QE_AUTH_DATA",
    "INTEL_AE_VENDOR",
    "KDF_SOURCE",
    "PAK_LABEL",
    "PCE_ISVPRODID",
    "PCE_ISVSVN",
    "PCE_PROVISION_KEY_ATTRIBUTEMASK",
    "PCE_PROVISION_KEY_MISCMASK",
    "PCE_PROVISION_KEY_XFRMMASK",
    "PCE_SOURCE",
    "PSVN_SIZE",
    "QE_ATT_LABEL",
    "QE_ISVPRODID",
    "QE_ISVSVN",
    "QE_SOURCE",
    "SEALED_DATA_HEADER_SIZE",
    "AeCallError",
    "AeFunction",
    "AppEnclave",
    "Attestable",
    "EnclaveBuild",
    "EnclaveLost",
    "PceError",
    "PceInfo",
    "ProvisioningCertificationEnclave",
    "QeInit",
    "Quote3Error",
    "QuotingEnclave",
    "SgxError",
    "ae_call",
    "build_app",
    "build_pce",
    "build_qe",
    "certification_data",
    "load_app",
    "load_pce",
    "load_qe",
    "p256_scalar_from_key",
    "pck_private_key",
    "ppid_from_provision_key",
    "target_info_of",
]
