# Usage: sh flaky.sh NAME N - appends NAME to runs.txt; fails until its N-th run.
n=$(grep -c "^$1$" runs.txt 2>/dev/null)
n=$((n + 1))
echo "$1" >> runs.txt
[ "$n" -ge "$2" ]
