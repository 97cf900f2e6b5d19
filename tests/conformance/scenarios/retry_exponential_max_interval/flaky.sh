# Counts its runs in count.txt and always fails.
n=$(cat count.txt 2>/dev/null || echo 0)
n=$((n + 1))
echo "$n" > count.txt
exit 1
