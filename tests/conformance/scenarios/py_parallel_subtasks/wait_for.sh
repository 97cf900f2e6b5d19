# Waits (at most 10 s) until every file named in the arguments exists.
n=0
for f in "$@"; do
  while [ ! -e "$f" ]; do
    n=$((n + 1))
    if [ "$n" -gt 200 ]; then echo "timed out waiting for $f" >&2; exit 1; fi
    sleep 0.05
  done
done
