"""Guest side: Attestation Agent, Confidential Data Hub, REST API server, attesters."""
