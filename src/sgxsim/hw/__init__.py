"""The silicon: SGX leaves, EPC/EPCM and processor state; outcomes are values (SgxStatus | Fault)."""
