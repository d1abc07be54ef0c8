"""ortserve as a Ray Serve application: the same ASGI app as `python -m service`, one copy per replica.

    serve run deploy.ray.serve_app:app        # from the repository root; ORTSERVE_* variables configure it

Each replica builds the app from its own ORTSERVE_* settings and Serve runs the app's lifespan there, so the
models load and warm up in every replica, and each replica batches the requests it is given.
"""

from ray import serve

from service.app import create_app
from service.settings import Settings


def build_service_app():
    """Runs in each replica (Serve calls a plain function there instead of pickling an app built here).
    strict: the lifespan waits for the models, so Serve routes to a replica only once they are loaded and
    warmed, and a model that fails to load fails the replica instead of leaving it half ready."""
    return create_app(Settings(strict=True))


@serve.deployment(
    num_replicas=2,
    ray_actor_options={"num_cpus": 2},
    # Serve's default, 5 requests at a time per replica, would keep the service's batches to 5 requests.
    max_ongoing_requests=64,
)
@serve.ingress(build_service_app)
class Ortserve:
    """The service's app behind Serve's HTTP proxy: every route of `python -m service` (typed, V2, health)."""


app = Ortserve.bind()
