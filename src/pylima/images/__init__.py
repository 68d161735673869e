"""Guest images: download with a shared cache, decompression, instance disks."""
