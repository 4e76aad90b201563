"""The embedded default scenario of ``sgxsim demo``.

A 2-socket server with 2 x 2 GiB of EPC runs a dozen enclaves of different sizes (a measured
database, a fleet of small web front ends, short batch jobs, a large unmeasured inference
enclave, an SGX2 cache that grows with EAUG, an archive enclave that memory pressure swaps out, a
key manager that exits on EPC loss), a VM with 32 MiB of vEPC, and the platform's quoting
enclaves (PCE + QE) serving a relying party. Then:

1. t=3 s: a late microcode load that does *not* raise the SGX TCB (a functional fix);
2. t=5 s: Intel publishes a TCB recovery: late-microcode SVN 3 becomes UpToDate, the running
   level (SVN 2) OutOfDate, so the relying party starts refusing quotes;
3. t=8 s: RDSEED is briefly starved (two failed draws);
4. t=8.5 s: the late load of the security patch (SVN 3); under the RFC v2 policy the kernel zaps
   the EPC and runs EUPDATESVN right away (retrying while RDSEED recovers);
5. t=11 s: the administrator's write to ``sgx.update_svn`` (only the explicit-trigger design has
   that knob).

Enclaves restart (or exit) as their ``on_epc_loss`` says and attest again with the new CPUSVN.
"""

from __future__ import annotations

from sgxsim.sim.scenario import Scenario, parse_scenario

__all__ = ["DEMO_SCENARIO_TOML", "demo_scenario"]

DEMO_SCENARIO_TOML = """\
[scenario]
name = "demo"
description = "A 2-socket SGX server through a late microcode load that raises the SGX SVN"
seed = 7
duration = "16s"

[machine]
sockets = 2
cpus_per_socket = 4
sgx2 = true
eupdatesvn = true
svn_update_policy = "rfc-v2-teardown"
vepc = "skip"

[[machine.epc_sections]]
size = "2GiB"
node = 0

[[machine.epc_sections]]
size = "2GiB"
node = 1

[machine.microcode.early]
revision = 0xd0003a5
late_microcode_svn = 2

[[machine.microcode.patches]]
name = "ipu-2025.1-functional"
revision = 0xd0003b9
late_microcode_svn = 2

[[machine.microcode.patches]]
name = "ipu-2025.2-sa-01213"
revision = 0xd0003d1
late_microcode_svn = 3

[[workload]]
name = "archive"
heap = "8MiB"
swap_out = true
attest_every = "6s"

[[workload]]
name = "db"
image_size = "8MiB"
measured = true
heap = "32MiB"
attest_every = "3s"
seal = true

[[workload]]
name = "web"
count = 4
image_size = "256KiB"
heap = "1MiB"
start = "200ms"
attest_every = "2s"

[[workload]]
name = "batch"
count = 2
image_size = "1MiB"
heap = "4MiB"
start = "500ms"
lifetime = "6s"
attest_every = "2500ms"
on_epc_loss = "exit"

[[workload]]
name = "inference"
image_size = "64MiB"
measured = false
heap = "64MiB"
attest_every = "4s"

[[workload]]
name = "edmm-cache"
heap = "1MiB"
sgx2_growth = "16MiB"
attest_every = "4s"
seal = true

[[workload]]
name = "kms"
heap = "256KiB"
start = "1s"
attest_every = "1500ms"
on_epc_loss = "exit"

[[vm]]
name = "tenant-a"
epc = "32MiB"
enclaves = 2
enclave_size = "8MiB"
start = "100ms"

[[event]]
at = "3s"
kind = "microcode_load"
patch = "ipu-2025.1-functional"

[[event]]
at = "5s"
kind = "tcb_recovery"
new_late_microcode_svn = 3

[[event]]
at = "8s"
kind = "entropy_starve"
count = 2

[[event]]
at = "8500ms"
kind = "microcode_load"
patch = "ipu-2025.2-sa-01213"

[[event]]
at = "11s"
kind = "svn_update_trigger"

[relying_party]
allow = ["UpToDate", "SWHardeningNeeded"]
grace_period = "0s"
"""


def demo_scenario() -> Scenario:
    """The parsed demo scenario."""
    return parse_scenario(DEMO_SCENARIO_TOML, source="<demo>")
