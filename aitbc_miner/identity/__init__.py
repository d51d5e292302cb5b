"""The rig's identity: its Ed25519 key (in a PKCS#11 token, or a file) and signed results.

``token`` opens a PKCS#11 token and reads its data objects (also used by the secret
sources); ``rigkey`` loads, makes and imports the rig key; ``signed_result`` signs what
the rig submits and checks it on the client's side (docs/identity.md).
"""
