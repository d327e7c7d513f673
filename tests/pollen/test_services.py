from pollen import services
from pollen._generated.pollen.v1 import blob_service_pb2, federation_service_pb2


def test_every_rpc_is_listed_with_its_messages() -> None:
    assert set(services.FEDERATION) == {
        "Handshake",
        "PollTask",
        "SubmitResult",
        "Heartbeat",
        "Leave",
    }
    assert set(services.BLOB) == {"DownloadBlob", "UploadBlob"}
    poll = services.FEDERATION["PollTask"]
    assert poll.path == "/pollen.v1.FederationService/PollTask"
    assert poll.request is federation_service_pb2.PollTaskRequest
    assert services.BLOB["DownloadBlob"].response is blob_service_pb2.DownloadBlobResponse


def test_only_unary_and_server_streaming_rpcs() -> None:
    # Browser clients (gRPC-web, Connect) cannot do client or bidirectional streaming.
    for table in services.SERVICES.values():
        for name, method in table.items():
            descriptor = method.request.DESCRIPTOR.file.services_by_name[
                method.service.split(".")[-1]
            ]
            assert not descriptor.methods_by_name[name].client_streaming
    streaming = {
        m.name for t in services.SERVICES.values() for m in t.values() if m.server_streaming
    }
    assert streaming == {"DownloadBlob"}
