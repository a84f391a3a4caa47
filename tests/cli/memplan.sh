#!/usr/bin/env bash
# memfold memplan end to end: its JSON's peak_bytes equals the arena peak memfold predict measures
# on the reference features (tiny model, the shared/testvectors case) and on a FASTA query with
# chunking, and memfold train-step's on the same features; --budget gives a largest N_res whose
# prediction fits and whose N + 1 does not; --chunk auto within a budget chooses chunks that fit
# (memplan) and predict --chunk auto --mem-budget runs under the prediction it prints; a budget too
# small is refused with the predicted need; bad usage is named.
set -u
BIN=${MEMFOLD_BIN:?MEMFOLD_BIN is set by ctest}
S=${MEMFOLD_SHARED:?MEMFOLD_SHARED is set by ctest}
TV=$S/testvectors
PY=/usr/bin/python3
T=$(mktemp -d "${TMPDIR:-/tmp}/memfold-cli-memplan-XXXXXX")
trap 'rm -rf "$T"' EXIT
failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }
ok() { echo "ok: $*"; }
json() { "$PY" -c "import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))" "$@"; }

# ---- predict: measured arena peak against the model ----
"$BIN" predict --features "$TV/features.h5" --params "$TV/params_af2.npz" --structure-layers 2 \
  --chunk 5 --name ref -o "$T/p" > "$T/p.log" 2>&1 || fail "predict: $(tail -2 "$T/p.log")"
measured=$(json "$T/p/ref.json" "d['memory']['arena_high_water_bytes']")
# the reference features: 24 residues, their MSA/extra/template sizes, 2 iterations (R)
"$BIN" memplan --config tiny --set structure_module.num_layers=2 --nres 24 --nseq 8 --nextra 16 \
  --ntempl 2 --recycles 1 --chunk 5 --json > "$T/plan.json" 2> "$T/plan.err" || fail "memplan: $(cat "$T/plan.err")"
predicted=$(json "$T/plan.json" "d['peak_bytes']")
if [ "$measured" = "$predicted" ]; then ok "predict arena peak $measured = memplan"; else fail "predict arena peak $measured, memplan $predicted"; fi

# ---- train-step: measured against --mode train --dropout off ----
"$BIN" train-step --features "$TV/features.h5" --params "$TV/params_af2.npz" --structure-layers 2 \
  --recompute block --chunk 3 --memory-table > "$T/ts.log" 2>&1 || fail "train-step: $(tail -2 "$T/ts.log")"
ts_measured=$(sed -n 's/.*(\([0-9]*\) bytes exactly).*/\1/p' "$T/ts.log" | head -1)
"$BIN" memplan --config tiny --set structure_module.num_layers=2 --mode train --dropout off \
  --nres 24 --nseq 8 --nextra 16 --ntempl 2 --iterations 2 --recompute block --chunk 3 --json \
  > "$T/tplan.json" 2> "$T/tplan.err" || fail "memplan train: $(cat "$T/tplan.err")"
ts_predicted=$(json "$T/tplan.json" "d['peak_bytes']")
if [ -n "$ts_measured" ] && [ "$ts_measured" = "$ts_predicted" ]; then
  ok "train-step arena peak $ts_measured = memplan"
else
  fail "train-step arena peak '${ts_measured}', memplan $ts_predicted"
fi

# ---- train-step --chunk auto: chunks chosen within the budget, measured = predicted ----
"$BIN" train-step --features "$TV/features.h5" --params "$TV/params_af2.npz" --structure-layers 2 \
  --recompute block --chunk auto --mem-budget 0.0059 --memory-table > "$T/tsa.log" 2>&1 || fail "train-step --chunk auto: $(tail -2 "$T/tsa.log")"
tsa_m=$(sed -n 's/.*(\([0-9]*\) bytes exactly).*/\1/p' "$T/tsa.log" | head -1)
tsa_p=$(sed -n 's/^predicted activation arena peak .*(\([0-9]*\) bytes)/\1/p' "$T/tsa.log")
if grep -q " rows" "$T/tsa.log" && [ -n "$tsa_m" ] && [ "$tsa_m" = "$tsa_p" ]; then
  ok "train-step --chunk auto: $(grep -c ' rows' "$T/tsa.log") modules chunked, measured $tsa_m = predicted"
else
  fail "train-step --chunk auto: measured '$tsa_m', predicted '$tsa_p'"
fi

# ---- --budget: the largest N_res fits, one more does not ----
"$BIN" memplan --config tiny --nres 50 --budget 0.05 --json > "$T/b.json" || fail "memplan --budget"
nmax=$(json "$T/b.json" "d['max_nres']")
for n in "$nmax" $((nmax + 1)); do
  "$BIN" memplan --config tiny --nres "$n" --json > "$T/n$n.json" || fail "memplan --nres $n"
done
fits=$(json "$T/n$nmax.json" "d['total_bytes'] <= 0.05 * 2**30")
over=$(json "$T/n$((nmax + 1)).json" "d['total_bytes'] > 0.05 * 2**30")
if [ "$nmax" -gt 0 ] && [ "$fits" = True ] && [ "$over" = True ]; then ok "largest N_res within 0.05 GiB: $nmax"; else fail "budget search: N $nmax fits=$fits next over=$over"; fi

# ---- --chunk auto ----
"$BIN" memplan --config tiny --nres 200 --chunk auto --budget 0.2 > "$T/auto.txt" 2>&1 || fail "chunk auto: $(tail -2 "$T/auto.txt")"
grep -q "triangle_multiplication" "$T/auto.txt" && ok "chunk auto prints its choice" || fail "chunk auto printed no choice"
if "$BIN" memplan --config tiny --nres 4000 --chunk auto --budget 0.01 > "$T/small.txt" 2>&1; then
  fail "a budget far too small was accepted"
else
  grep -q "over the budget" "$T/small.txt" && ok "too small a budget refused: $(tail -1 "$T/small.txt")" || fail "refusal message: $(cat "$T/small.txt")"
fi
"$BIN" predict --features "$TV/features.h5" --params "$TV/params_af2.npz" --structure-layers 2 \
  --chunk auto --mem-budget 0.01 --name auto -o "$T/a" > "$T/a.log" 2>&1 || fail "predict --chunk auto: $(tail -2 "$T/a.log")"
pred=$(sed -n 's/^predicted activation arena peak .*(\([0-9]*\) bytes)/\1/p' "$T/a.log")
grep -q "chunk auto within" "$T/a.log" && ok "predict --chunk auto: $(grep -c rows "$T/a.log") modules chunked" || fail "predict --chunk auto printed no choice"
am=$(json "$T/a/auto.json" "d['memory']['arena_high_water_bytes']")
[ "$am" = "$pred" ] && ok "predict --chunk auto: measured $am bytes = predicted" || fail "predict --chunk auto: measured $am, predicted '$pred'"
# a budget that forces chunking: below the unchunked prediction
full=$(json "$T/plan.json" "d['total_bytes']")
"$BIN" predict --features "$TV/features.h5" --params "$TV/params_af2.npz" --structure-layers 2 \
  --recycles 1 --chunk auto --mem-budget 0.00095 --name tight -o "$T/t" > "$T/t.log" 2>&1 || fail "predict --chunk auto (tight): $(tail -2 "$T/t.log")"
tm=$(json "$T/t/tight.json" "d['memory']['arena_high_water_bytes']")
tp=$(sed -n 's/^predicted activation arena peak .*(\([0-9]*\) bytes)/\1/p' "$T/t.log")
[ "$tm" = "$tp" ] && grep -q " rows" "$T/t.log" && ok "tight budget: chunks chosen ($(grep ' rows' "$T/t.log" | tr -s ' ' | tr '\n' ';')), measured $tm = predicted" || fail "tight budget: measured $tm, predicted '$tp'"

# ---- --device cuda: the trunk on the GPU, the structure module and heads on the host ----
"$BIN" memplan --config tiny --nres 40 --device cuda --json > "$T/cuda.json" 2> "$T/cuda.err" \
  || fail "memplan --device cuda: $(cat "$T/cuda.err")"
"$BIN" memplan --config tiny --nres 40 --json > "$T/cpu.json" || fail "memplan --nres 40"
split_ok=$(json "$T/cuda.json" "d['host_peak_bytes'] > 0 and d['peak_bytes'] > 0 and d['host_total_bytes'] >= d['host_peak_bytes'] + d['state_bytes']")
[ "$split_ok" = True ] && ok "memplan --device cuda: GPU arena $(json "$T/cuda.json" "d['peak_bytes']"), host arena $(json "$T/cuda.json" "d['host_peak_bytes']") (one CPU arena: $(json "$T/cpu.json" "d['peak_bytes']"))" \
  || fail "memplan --device cuda: $(cat "$T/cuda.json")"

# ---- usage ----
for bad in "--nres 0" "--mode fly --nres 5" "--nres 5 --chunk auto" "--nres 5 --chunk.nonsense 3" "--nres 5 --device tpu"; do
  if "$BIN" memplan --config tiny $bad > "$T/u.txt" 2>&1; then fail "accepted: $bad"; else ok "refused: $bad: $(grep -m1 memplan "$T/u.txt")"; fi
done

[ $failures -eq 0 ] && echo "memplan cli: all passed" || echo "memplan cli: $failures failed"
exit $((failures > 0))
