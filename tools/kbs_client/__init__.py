"""`kbs-client`: the operator and test client of a KBS (upstream `tools/kbs-client`)."""
