# Counts its runs in count.txt; fails until run number $1 (so "sh flaky.sh 3" succeeds on the 3rd run).
n=$(cat count.txt 2>/dev/null || echo 0)
n=$((n + 1))
echo "$n" > count.txt
echo -n "run$n," >> runs.txt
[ "$n" -ge "$1" ]
