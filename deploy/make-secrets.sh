#!/bin/sh
# Create deploy/secrets/ for docker-compose.yml and the Kubernetes Secrets: the admin key pair and a 30-day admin
# token, a CA and the Attestation Service's token-signing key and chain (leaf first), and a random PostgreSQL
# password, in deploy/secrets/ (or the folder given as the only argument). Run it once with the project's
# Python in PATH or in $PYTHON (e.g. PYTHON=.venv/bin/python); existing keys are kept.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
python=${PYTHON:-python3}
out=${1:-"$here/secrets"}
work="$out/.material"
umask 077
mkdir -p "$out"
"$python" - "$work" <<'PY'
import sys
from pathlib import Path

from trustee_cli.configs import ServerPaths, ServerSettings
from trustee_cli.material import prepare_server_dir

prepare_server_dir(ServerPaths.under(Path(sys.argv[1])), ServerSettings("127.0.0.1", 8080, 50004, 50003))
PY
cp "$work/admin/public.pem" "$out/admin-public.pem"
cp "$work/admin/private.key" "$out/admin-private.key"
cp "$work/admin/token" "$out/admin-token"
cp "$work/as/ca.pem" "$out/as-ca.pem"
cp "$work/as/token.key" "$out/token.key"
cp "$work/as/token-cert-chain.pem" "$out/token-cert-chain.pem"
if [ ! -s "$out/postgres-password" ]; then
    "$python" -c 'import secrets; print(secrets.token_urlsafe(24), end="")' > "$out/postgres-password"
fi
printf 'POSTGRES_URL=postgresql://trustee:%s@postgres:5432/trustee\n' "$(cat "$out/postgres-password")" > "$out/postgres.env"
# The containers run as uid 10001: let them read the mounted files (this folder stays private to you).
chmod 0700 "$out"
chmod 0644 "$out"/admin-public.pem "$out"/as-ca.pem "$out"/token.key "$out"/token-cert-chain.pem "$out"/postgres-password
echo "secrets in $out; admin token: $out/admin-token"
