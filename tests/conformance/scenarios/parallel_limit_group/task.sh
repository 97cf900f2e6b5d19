# One iteration of a loop run with `_parallel: {limit: 2}`: tasks i and i^1 form a batch.
# Any ordering mistake is appended to violations.txt (the scenario expects no such file).
i=$1
total=$2
batch=$((i / 2))
touch "running.$i"
j=0
while [ "$j" -lt "$total" ]; do
  jb=$((j / 2))
  if [ "$jb" -lt "$batch" ] && [ ! -e "done.$j" ]; then
    echo "task $i started before task $j (earlier batch) finished" >> violations.txt
  fi
  if [ "$jb" -gt "$batch" ] && { [ -e "running.$j" ] || [ -e "done.$j" ]; }; then
    echo "task $j (later batch) started before task $i" >> violations.txt
  fi
  j=$((j + 1))
done
count=$(ls running.* | wc -l)
if [ "$count" -gt 2 ]; then
  echo "$count tasks running at once while task $i ran" >> violations.txt
fi
partner=$((i + 1))
if [ $((i % 2)) -eq 0 ] && [ "$partner" -lt "$total" ]; then
  # The first task of a batch waits until its partner started (so they really run together),
  # then stays busy a little longer: a sliding window would start the next batch meanwhile.
  n=0
  while [ ! -e "running.$partner" ] && [ ! -e "done.$partner" ]; do
    n=$((n + 1))
    if [ "$n" -gt 200 ]; then echo "partner $partner of task $i never started" >> violations.txt; break; fi
    sleep 0.05
  done
  sleep 0.3
fi
echo "$i" >> finished.txt
rm "running.$i"
touch "done.$i"
