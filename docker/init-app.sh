# compose.yaml's one-shot init (run by sh in the pushwire image): make sure the app
# PUSHWIRE_APP exists in discovery and print its credentials.
#   - PUSHWIRE_APP_SECRET / PUSHWIRE_APP_API_KEY given: the app gets them (created or changed);
#   - not given: an existing app keeps its own, a new app gets random ones.
# Exits non-zero when discovery cannot be read, so nothing that depends on it starts.
# It runs before center (so not through the admin API): `pushwire app --discovery`.
set -eu
app=${PUSHWIRE_APP:-demo}
secret=${PUSHWIRE_APP_SECRET:-}
key=${PUSHWIRE_APP_API_KEY:-}
err=$(mktemp)
trap 'rm -f "$err"' EXIT

random() { python -c 'import secrets; print(secrets.token_urlsafe(24))'; }

where="--discovery=$PUSHWIRE_DISCOVERY"
if pushwire app show "$app" "$where" >/dev/null 2>"$err"; then
    found=yes
elif grep -q "no app" "$err"; then
    found=no
else
    cat "$err" >&2
    exit 1
fi
if [ "$found" = no ] || [ -n "$secret$key" ]; then
    set -- "$app" "$where"
    if [ -n "$secret" ] || [ "$found" = no ]; then set -- "$@" --secret="${secret:-$(random)}"; fi
    if [ -n "$key" ] || [ "$found" = no ]; then set -- "$@" --api-key="${key:-$(random)}"; fi
    pushwire app set "$@" >/dev/null
    [ "$found" = no ] && echo "init: created app $app"
fi
# One line, the same words as the `pushwire dev` banner (scripts/compose reads it).
pushwire app show "$app" "$where" --reveal | python -c 'import json, sys
a = json.load(sys.stdin)
print("app %s  secret %s  api key %s" % (a["id"], a["secrets"][0], a["api_keys"][0]))'
