"""Guest image pulling: registry client, safe layer unpacking, the runtime `config.json`, and `pull_image`.

See guest/image/pull.py for the pull, guest/image/bundle.py for the image config → OCI runtime spec conversion.
"""
