"""Images: download with cache and digest check, convert, and the local image builder."""
