"""KBS plugins served at `/kbs/v0/<plugin>/...` through one generic gateway (trustee-server.md 2.1, 2.9).

A plugin (`base.ClientPlugin`) decides per request whether it needs the
admin credential (`validate_auth`) and whether its answer must be
JWE-encrypted to the TEE key of the caller's attestation token
(`encrypted`); `handle` does the work. The gateway
(`kbs.http.plugin_handlers`) enforces both: admin requests go through the
admin authorizer, the others need an attestation token and the resource
policy's `allow` with `data.plugin` = the plugin name. The `resource` and
`sample` plugins keep their own handlers; `pkcs11`, `external` and
`provisioner` are plugins here.
"""
