"""The untrusted side of a loaded enclave (the URTS's role): enter with a call block, copy back.

Models: the SDK's ``sgx_ecall`` path through the vDSO (``__vdso_sgx_enter_enclave``),
``sgx_create_report`` / ``sgx_get_target_info``, ``sgx_destroy_enclave``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sgxsim.errors import InvalidArgument
from sgxsim.hw.arch import (
    Report,
    Targetinfo,
)
from sgxsim.kernel import uapi
from sgxsim.kernel.process import Process
from sgxsim.sdk.loader import Enclave
from sgxsim.sdk.quoting.build import EnclaveBuild
from sgxsim.sdk.quoting.ecall import U64_MAX, AeCallError, AeFunction, EnclaveLost, ae_call, need_bytes

__all__ = [
    "CallResult",
    "HostEnclave",
    "target_info_of",
]


def target_info_of(report: bytes | Report) -> Targetinfo:
    """TARGETINFO naming the enclave a REPORT describes.

    Models: SDK ``sgx_get_target_info`` / the QE library's ``sgx_qe_get_target_info`` (MRENCLAVE,
    ATTRIBUTES, XFRM, MISCSELECT, CONFIGSVN, CONFIGID of the target). Outcome: the Targetinfo;
    InvalidArgument for a value that is not a 432-byte REPORT.
    """
    r = report if isinstance(report, Report) else Report.unpack(need_bytes("report", report, Report.SIZE))
    return Targetinfo(
        measurement=r.mrenclave,
        attributes=r.attributes,
        xfrm=r.xfrm,
        config_svn=r.configsvn,
        miscselect=r.miscselect,
        config_id=r.configid,
    )


@dataclass(frozen=True)
class CallResult:
    status: int
    data: bytes
    out_len: int
    leaf_rax: int


class HostEnclave:
    """A loaded enclave and the untrusted-side call path (the URTS's role)."""

    def __init__(self, encl: Enclave, build: EnclaveBuild) -> None:
        self.encl = encl
        self.build = build
        self.calls = 0

    @property
    def proc(self) -> Process:
        return self.encl.proc

    @property
    def alive(self) -> bool:
        """The hosting process runs and the enclave was not closed (its EPC may still be lost)."""
        return not self.encl.closed and not self.encl.proc.exited

    def ecall(
        self,
        function: int,
        inputs: Sequence[bytes | None] = (),
        *,
        arg0: int = 0,
        arg1: int = 0,
        out_size: int = 0,
    ) -> CallResult:
        """Enter the enclave through the vDSO with a call block; copy the output back.

        Outcomes: the enclave's status, output bytes (when it succeeded), out_len and the last
        EGETKEY RAX; :class:`EnclaveLost` if the enclave cannot be entered or exits other than by
        EEXIT (the vDSO's exception report is attached).
        """
        name = f"{self.build.name}[{function}]"
        if not self.alive:
            raise EnclaveLost(name, "the enclave or its process is gone")
        if len(inputs) > 3:
            raise InvalidArgument(f"at most three input buffers, got {len(inputs)}")
        proc = self.proc
        held: list[tuple[int, int]] = []
        try:
            call = ae_call(function=function, arg0=arg0 & U64_MAX, arg1=arg1 & U64_MAX)
            for i, data in enumerate(inputs):
                if data is None:
                    continue
                raw = need_bytes(f"input {i + 1}", data)
                addr = proc.alloc(raw)
                held.append((addr, max(len(raw), 1)))
                setattr(call, f"in{i + 1}", addr)
                setattr(call, f"in{i + 1}_size", len(raw))
            if out_size:
                call.out = proc.alloc(out_size)
                call.out_size = out_size
                held.append((call.out, out_size))
            self.calls += 1
            ret = self.encl.call_op(call)
            run = self.encl.run
            if ret != 0 or run.function != uapi.EEXIT:
                raise EnclaveLost(
                    name,
                    f"vDSO returned {ret}, function {run.function}, exception vector {run.exception_vector}",
                    run.exception_vector,
                    run.exception_error_code,
                    run.exception_addr,
                )
            status = int(call.status)
            data = b""
            if status == 0 and call.out_len:
                data = proc.read(call.out, min(int(call.out_len), out_size))
            return CallResult(status, data, int(call.out_len), int(call.leaf_rax))
        finally:
            if not proc.exited:
                for addr, size in held:
                    proc.munmap(addr, size)

    def self_report(self) -> Report:
        """This enclave's REPORT (function 0: EREPORT with an all-zero TARGETINFO).

        Models: SDK ``sgx_create_report(NULL, NULL, &report)``. Outcomes: the Report; EnclaveLost.
        """
        res = self.ecall(AeFunction.SELF_REPORT, out_size=Report.SIZE)
        if res.status:
            raise AeCallError(f"{self.build.name}.self_report", res.status)
        return Report.unpack(res.data)

    def target_info(self) -> Targetinfo:
        """TARGETINFO other enclaves use to EREPORT to this one."""
        return target_info_of(self.self_report())

    def close(self) -> None:
        """Unmap and close the enclave (idempotent; nothing to do if its process exited).

        Models: SDK ``sgx_destroy_enclave`` (selftests' ``encl_delete``).
        """
        if not self.encl.closed and not self.encl.proc.exited:
            self.encl.close()
