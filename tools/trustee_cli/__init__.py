"""`trustee`: run the server side (RVPS, AS, KBS) or the guest side (AA, CDH, REST API) locally."""
