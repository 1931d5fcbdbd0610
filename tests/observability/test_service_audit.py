"""Audit logs of the AS and the RVPS: their write APIs, reached through the KBS or directly over gRPC."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import grpc
import pytest

from tests.kbs.helpers import policy_body
from tests.observability.conftest import Stack
from tests.observability.test_audit import admin, events_for
from tests.observability.test_tracing import fetch, sample_message, sample_value
from tests.procs import Proc, script
from tests.tools.stack import free_ports
from trustee_pb import attestation_pb2, attestation_pb2_grpc, reference_pb2, reference_pb2_grpc

ATTESTATION_POLICY = 'package policy\ndefault trust_claims := {}\n'


async def test_a_reference_value_registered_through_the_kbs_is_audited_by_the_rvps_with_the_same_request_id(stack: Stack) -> None:
    message = sample_message({"rvps_audited": ["42"]})
    status, rid = await admin(stack.kbs, stack.material, "POST", "reference-value", json=message)
    assert status == 200
    [kbs_event] = events_for(stack.audit, rid)
    [rvps_event] = events_for(stack.root / "rvps-audit.jsonl", rid)
    assert kbs_event["content"]["sha256"] == rvps_event["content"]["sha256"]
    assert (rvps_event["service"], rvps_event["action"], rvps_event["outcome"]) == ("rvps", "reference_value.register", "ok")
    assert rvps_event["peer"].startswith(("ipv4:127.0.0.1:", "ipv6:"))
    assert not events_for(stack.root / "as-audit.jsonl", rid)  # the AS only proxies to a remote RVPS: the RVPS records it


async def test_an_attestation_policy_set_through_the_kbs_is_audited_by_the_as(stack: Stack) -> None:
    body = {"policy_id": "audited", "policy": policy_body(ATTESTATION_POLICY)["policy"]}
    status, rid = await admin(stack.kbs, stack.material, "POST", "attestation-policy", json=body)
    assert status == 200
    [event] = events_for(stack.root / "as-audit.jsonl", rid)
    assert (event["service"], event["action"], event["outcome"]) == ("grpc-as", "attestation_policy.set", "ok")
    assert event["target"] == {"policy_id": "audited"}
    assert event["content"] == {"sha256": hashlib.sha256(ATTESTATION_POLICY.encode()).hexdigest(), "bytes": len(ATTESTATION_POLICY)}
    [kbs_event] = events_for(stack.audit, rid)
    assert kbs_event["target"] == {"policy_id": "audited"} and kbs_event["content"] == event["content"]


async def test_direct_grpc_writes_bypassing_the_kbs_are_audited_too(stack: Stack) -> None:
    rvps_address = stack.rvps.args[stack.rvps.args.index("--address") + 1]
    metadata = (("x-request-id", "direct-grpc-1"),)
    async with grpc.aio.insecure_channel(rvps_address) as channel:
        stub = reference_pb2_grpc.ReferenceValueProviderServiceStub(channel)
        await stub.DeleteReferenceValue(reference_pb2.ReferenceValueDeleteRequest(reference_value_id="rvps_audited"), metadata=metadata)
        bad = json.dumps({"version": "9.9", "type": "sample", "payload": base64.b64encode(b"{}").decode()})
        try:
            await stub.RegisterReferenceValue(reference_pb2.ReferenceValueRegisterRequest(message=bad), metadata=metadata)
        except grpc.aio.AioRpcError as exc:
            assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT
    events = events_for(stack.root / "rvps-audit.jsonl", "direct-grpc-1")
    assert [(e["action"], e["outcome"]) for e in events] == [("reference_value.delete", "ok"), ("reference_value.register", "failed")]
    assert events[0]["target"] == {"reference_value_id": "rvps_audited"} and events[1]["reason"]["type"] == "RvpsError"
    as_address = stack.as_proc.args[stack.as_proc.args.index("--socket") + 1]
    async with grpc.aio.insecure_channel(as_address) as channel:
        policies = attestation_pb2_grpc.AttestationServiceStub(channel)
        await policies.DeletePolicy(attestation_pb2.DeletePolicyRequest(policy_id="audited"), metadata=(("x-request-id", "direct-grpc-2"),))
    [deleted] = events_for(stack.root / "as-audit.jsonl", "direct-grpc-2")
    assert (deleted["action"], deleted["outcome"], deleted["target"]) == ("attestation_policy.delete", "ok", {"policy_id": "audited"})


async def test_an_rvps_that_cannot_write_its_audit_log_refuses_to_report_a_change_as_done(tmp_path: Path) -> None:
    port, metrics_port = free_ports(2)
    config = tmp_path / "rvps.toml"
    config.write_text(f'[metrics]\naddress = "127.0.0.1:{metrics_port}"\n[audit]\npath = "/dev/full"\n'
                      f'[storage_backend]\nstorage_type = "Memory"\n')
    proc = Proc([script("rvps"), "--config", str(config), "--address", f"127.0.0.1:{port}"], tmp_path / "rvps.log", port=port)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = reference_pb2_grpc.ReferenceValueProviderServiceStub(channel)
            message = json.dumps(sample_message({"unrecorded": ["1"]}))
            with pytest.raises(grpc.aio.AioRpcError) as failed:
                await stub.RegisterReferenceValue(reference_pb2.ReferenceValueRegisterRequest(message=message))
        assert failed.value.code() == grpc.StatusCode.INTERNAL
        assert dict(failed.value.trailing_metadata() or ())["trustee-error-variant"] == "StorageError"
        _, text = await fetch(f"http://127.0.0.1:{metrics_port}/metrics")
        assert sample_value(text, "rvps_audit_write_failures_total") >= 1
        assert "audit log write to /dev/full failed" in proc.output() and "reference_value.register" in proc.output()
    finally:
        assert proc.stop() == 0
