"""The Pollen reference client: drives a `pollen.Client` over gRPC.

    import reference_client
    status = reference_client.run(MyClient(), server="fl.example.org:443", root_cert="ca.pem")

or from a shell: `python -m reference_client --app my_app:MyClient --server HOST:PORT ...`.
"""

from reference_client.app import AppLoadError, load_app
from reference_client.backoff import RetryPolicy
from reference_client.config import ClientOptions
from reference_client.runner import ReferenceClient, run

__all__ = [
    "AppLoadError",
    "ClientOptions",
    "ReferenceClient",
    "RetryPolicy",
    "load_app",
    "run",
]
