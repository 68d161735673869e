"""Container engines on pylima instances: the containerd archive (`containerd.archives`),
and the host side of a guest's docker/podman socket (docker contexts)."""
