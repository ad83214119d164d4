#!/usr/bin/env bash
# End-to-end test of the df11 tool on checkpoint directories: synth -> compress -> verify ->
# decompress -> byte-compare, then corrupted inputs that must each fail cleanly: non-zero exit,
# a message naming the file (and tensor), and no output or temporary directory left behind.
# Usage: test_df11_cli.sh DF11_BINARY SCRATCH_DIR
set -uo pipefail

df11=$(realpath "${1:?usage: test_df11_cli.sh DF11_BINARY SCRATCH_DIR}")
scratch=${2:?usage: test_df11_cli.sh DF11_BINARY SCRATCH_DIR}
[[ -x $df11 ]] || { echo "no df11 binary at $df11"; exit 1; }
rm -rf "$scratch"
mkdir -p "$scratch"
scratch=$(realpath "$scratch")
cd "$scratch" || exit 1

failures=0
fail() {
  echo "FAIL: $*"
  failures=$((failures + 1))
}

# Runs df11 and requires success.
ok() {
  if ! "$df11" "$@" >"$scratch/last.out" 2>"$scratch/last.err"; then
    fail "df11 $* exited non-zero"
    cat "$scratch/last.out" "$scratch/last.err"
  fi
}

# expect_error OUT "needle" ... -- ARGS: df11 ARGS must exit non-zero, its stderr must contain
# every needle, and neither OUT nor OUT.tmp-* may exist afterwards.
expect_error() {
  local out=$1
  shift
  local needles=()
  while [[ $1 != -- ]]; do
    needles+=("$1")
    shift
  done
  shift
  if "$df11" "$@" >"$scratch/last.out" 2>"$scratch/last.err"; then
    fail "df11 $* succeeded but should have failed"
    return
  fi
  local needle
  for needle in "${needles[@]}"; do
    if ! grep -qF -- "$needle" "$scratch/last.err"; then
      fail "df11 $*: message lacks '$needle': $(cat "$scratch/last.err")"
    fi
  done
  if [[ -e $out ]] || compgen -G "$out.tmp*" >/dev/null; then
    fail "df11 $*: left $out or a temporary directory behind"
  fi
  echo "ok (fails cleanly): $(head -c 300 "$scratch/last.err")"
}

# Header surgery on a safetensors file, in bash: its 8-byte length, its JSON, and a rewrite with
# a new JSON (data section unchanged).
header_len() { od -An -tu8 -N8 "$1" | tr -d ' '; }
header_of() { tail -c +9 "$1" | head -c "$(header_len "$1")"; }
le64() {
  local v=$1 i
  for i in 0 1 2 3 4 5 6 7; do printf "\\$(printf %03o $(((v >> (8 * i)) & 255)))"; done
}
set_header() {
  local f=$1 text=$2 n
  n=$(header_len "$f")
  { le64 "${#text}"; printf '%s' "$text"; tail -c +$((9 + n)) "$f"; } >"$f.new" && mv "$f.new" "$f"
}
# A fresh copy of the source checkpoint to corrupt.
fresh() {
  rm -rf "$scratch/bad"
  cp -r "$scratch/src" "$scratch/bad"
}

# ---- the happy path -----------------------------------------------------------------------------
# A small shard size forces several shards and an index.
ok synth src --arch tiny --layers 2 --vocab 512 --seed 3 --shard-mb 0.3
((failures == 0)) || exit 1  # everything below needs the source checkpoint
[[ -f src/model.safetensors.index.json ]] || fail "synth wrote no index"
n_shards=$(ls src/model-*-of-*.safetensors 2>/dev/null | wc -l)
((n_shards > 2)) || fail "synth wrote $n_shards shards, expected several"

ok compress src df11 --threads 2
for f in config.json lm_head.safetensors model_embed_tokens.safetensors model_layers_0.safetensors \
  model_layers_1.safetensors model.safetensors; do
  [[ -f df11/$f ]] || fail "compress wrote no $f"
done
grep -q '"dfloat11_config"' df11/config.json || fail "config.json lacks dfloat11_config"

ok verify src df11
grep -q "verify: PASS" "$scratch/last.out" || fail "verify did not pass: $(cat "$scratch/last.out")"
grep -q "model.layers.1.mlp.down_proj.weight .* ok" "$scratch/last.out" || fail "verify table lacks a tensor row"

ok stats df11 --json
grep -q '"exponent_entropy_bits"' "$scratch/last.out" || fail "stats --json lacks the entropy"
ok stats src
grep -q "model.layers.0.self_attn.q_proj.weight" "$scratch/last.out" || fail "stats lacks per-tensor rows"
expect_error "$scratch/none" "is a DF11 directory: its units keep their own layout" -- stats df11 --layout canonical
expect_error "$scratch/none" "is a DF11 directory" -- stats df11 --pattern '{"lm_head": []}' 
# Options out of range are refused naming the option: --threads (0 .. 4096), a seed that is not
# an unsigned 64-bit integer (CLI11 read -1 as 2^64-1), a layer outside Nemo's 40, --layer or
# --fraction with a PATH (they were ignored).
expect_error "$scratch/none" "--threads: Value 5000 not in range 0 to 4096" -- stats --synthetic nemo-layer --threads 5000
expect_error "$scratch/none" "--threads: Value -7 not in range" -- compress src "$scratch/none" --threads -7
expect_error "$scratch/none" "--seed: '-1' is not an integer" -- synth --arch tiny "$scratch/none" --seed -1
expect_error "$scratch/none" "--seed: '99999999999999999999' is not an integer" -- synth --arch tiny "$scratch/none" \
  --seed 99999999999999999999
expect_error "$scratch/none" "--layer: Value 40 not in range 0 to 39" -- stats --synthetic nemo-layer --layer 40
expect_error "$scratch/none" "--layer chooses a nemo-layer; --synthetic nemo-lm-head has none" -- \
  stats --synthetic nemo-lm-head --layer 3
expect_error "$scratch/none" "--layers: Value 0 not in range 1 to 4096" -- synth --arch tiny "$scratch/none" --layers 0
expect_error "$scratch/none" "--vocab: Value 0 not in range 1 to 67108864" -- synth --arch tiny "$scratch/none" --vocab 0
expect_error "$scratch/none" "--layer and --fraction choose a --synthetic unit" -- stats src --fraction 0.5
# Threads the system refuses (here an address-space limit: 3000 stacks of 8 MB do not fit in 4 GB)
# leave the work to those that started: no abort.
if ! (ulimit -v 4000000 2>/dev/null; "$df11" stats --synthetic nemo-layer --fraction 0.05 --threads 3000) \
  >"$scratch/last.out" 2>&1; then
  fail "stats with threads the system refuses: $(tail -3 "$scratch/last.out")"
fi
grep -q "bit-exact" "$scratch/last.out" || fail "stats with refused threads did not round-trip: $(cat "$scratch/last.out")"
# A full layout name: DF11's tables with a count byte per thread; a malformed name is refused.
ok stats --synthetic nemo-layer --fraction 0.002 --layout chain32.t256.b16.g5.pcount
grep -q "chain32.t256.b16.g5.pcount" "$scratch/last.out" || fail "stats does not name the count layout"
expect_error "$scratch/none" "unknown layout 'chain32.t256.b16.pcount'" -- stats --synthetic nemo-layer --fraction 0.002 \
  --layout chain32.t256.b16.pcount
expect_error "$scratch/none" "bytes_per_thread <= 16" -- stats --synthetic nemo-layer --fraction 0.002 \
  --layout canon16.t64.b32.g4.pcount

ok decompress df11 back --shard-mb 0.3
ok verify src back
grep -q "verify: PASS" "$scratch/last.out" || fail "decompressed checkpoint differs from the source"
# Both directories are planned the same way, so every file is identical, not only every tensor.
for f in src/*; do
  cmp -s "$f" "back/$(basename "$f")" || fail "decompressed $(basename "$f") differs from the source"
done

# verify notices a changed weight and a missing tensor.
cp -r back changed
shard=$(grep -o '"model.layers.0.mlp.up_proj.weight": "[^"]*"' src/model.safetensors.index.json | cut -d'"' -f4)
size=$(stat -c %s "changed/$shard")
printf '\x55' | dd of="changed/$shard" bs=1 seek=$((size - 2)) conv=notrunc status=none
if "$df11" verify changed df11 >"$scratch/last.out" 2>&1; then fail "verify missed a changed weight"; fi
grep -q "MISMATCH" "$scratch/last.out" || fail "verify did not report the mismatch"

# OUT exists: refused without --force (and left as it was), replaced with it.
before=$(cd df11 && find . -type f | sort | xargs sha256sum)
expect_error /nonexistent/none "df11" "already exists" "--force" -- compress src df11
[[ $(cd df11 && find . -type f | sort | xargs sha256sum) == "$before" ]] || fail "a refused compress changed df11/"
ls -d df11.tmp-* >/dev/null 2>&1 && fail "a refused compress left a temporary directory"
ok compress src df11 --force

# ---- corrupted inputs ---------------------------------------------------------------------------
# The shard of layer 0's q_proj, which holds several tensors.
shard_of() { grep -o "\"$1\": \"[^\"]*\"" src/model.safetensors.index.json | cut -d'"' -f4; }
victim=$(shard_of model.layers.0.self_attn.q_proj.weight)
victim_tensor=$(header_of "src/$victim" | grep -o '"model[^"]*"' | head -1 | tr -d '"')
[[ -n $victim && -n $victim_tensor ]] || fail "cannot find the shard to corrupt"

fresh
truncate -s -100 "bad/$victim"
expect_error out "$victim" "truncated" -- compress bad out

fresh
size=$(stat -c %s "bad/$victim")
{ le64 $((size + 1000)); tail -c +9 "src/$victim"; } >"bad/$victim"
expect_error out "$victim" "header length" -- compress bad out

fresh
# Two tensors overlapping: the second tensor's range moved back by 2 bytes (same size).
h=$(header_of "src/$victim")
second=$(printf '%s' "$h" | grep -o '"data_offsets":\[[0-9]*,[0-9]*\]' | sed -n 2p)
b=$(printf '%s' "$second" | grep -o '[0-9]*' | sed -n 1p)
e=$(printf '%s' "$second" | grep -o '[0-9]*' | sed -n 2p)
set_header "bad/$victim" "${h/"$second"/\"data_offsets\":[$((b - 2)),$((e - 2))]}"
expect_error out "$victim" "overlap" -- compress bad out

fresh
h=$(header_of "src/$victim")
set_header "bad/$victim" "${h/\"BF16\"/\"BF17\"}"
expect_error out "$victim" "$victim_tensor" "unknown dtype 'BF17'" -- compress bad out

fresh
# A norm's shape that no longer matches its byte range.
norm_shard=$(shard_of model.layers.1.input_layernorm.weight)
h=$(header_of "src/$norm_shard")
norm_entry=$(printf '%s' "$h" | grep -o '"model.layers.1.input_layernorm.weight":{[^}]*}')
set_header "bad/$norm_shard" "${h/"$norm_entry"/${norm_entry/\[256\]/[255]}}"
expect_error out "$norm_shard" "model.layers.1.input_layernorm.weight" "needs" -- compress bad out

fresh
# An Inf weight: DF11 cannot code exponent 255.
begin=$(header_of "src/$victim" | grep -o "\"$victim_tensor\":{[^}]*}" | grep -o '\[[0-9]*,' | tail -1 | tr -d '[,')
printf '\x80\x7f' | dd of="bad/$victim" bs=1 seek=$((8 + $(header_len "src/$victim") + begin + 10)) conv=notrunc status=none
expect_error out "$victim" "$victim_tensor" "exponent 255" -- compress bad out

fresh
rm "bad/$victim"
expect_error out "model.safetensors.index.json" "$victim" "does not exist" -- compress bad out

fresh
head -c 200 src/model.safetensors.index.json >bad/model.safetensors.index.json
expect_error out "model.safetensors.index.json" "not valid JSON" -- compress bad out

fresh
sed -i 's/"weight_map": {/"weight_map": {"model.layers.0.ghost.weight": "'"$victim"'",/' bad/model.safetensors.index.json
expect_error out "model.safetensors.index.json" "model.layers.0.ghost.weight" "$victim" -- compress bad out

expect_error out "not a valid regular expression" 'model\.layers\.(\d+' -- \
  compress src out --pattern '{"model\\.layers\\.(\\d+": []}'
echo '{"lm_head": "not a list"}' >bad_pattern.json
expect_error out "bad_pattern.json" "lm_head" -- compress src out --pattern bad_pattern.json

# A broken DF11 directory fails decompress and verify the same way.
rm -rf bad_df11
cp -r df11 bad_df11
truncate -s -50 bad_df11/model_layers_1.safetensors
expect_error out "model_layers_1.safetensors" "truncated" -- decompress bad_df11 out
expect_error out "model_layers_1.safetensors" -- verify src bad_df11

# A missing input directory.
expect_error out "no_such_dir" -- compress no_such_dir out

# df11 variants: at least 8 variants with their traits and layout, and each decoder kernel's
# resources and SASS loops from the files given (made up here: the real ones need nvcc and
# cuobjdump); a named file that is missing is an error.
sig='gap_decode_kernel<(df11::dec::TableKind)0, (df11::dec::Partition)0, (df11::dec::Staging)0, 512, 8>'
printf '{"kernels": [{"name": "void df11::dec::(anonymous namespace)::%s(x)", "arch": "sm_90", "registers": 31}]}\n' \
  "$sig" >res.json
printf '{"kernels": [{"name": "void df11::dec::(anonymous namespace)::%s(x)", "loops": [{"min_cycle": 30, "max_cycle": 51, "span": 60, "ops": {"LDS": 1}}, {"min_cycle": 42, "max_cycle": 42, "span": 42, "ops": {}}, {"min_cycle": 300, "max_cycle": 900, "span": 990, "barrier": true, "ops": {}}]}]}\n' \
  "$sig" >sass.json
ok variants --json --resources res.json --sass sass.json
python3 - "$scratch/last.out" <<'PY' || fail "df11 variants --json: $(head -c 400 "$scratch/last.out")"
import json, sys
d = json.load(open(sys.argv[1]))
v = {x["name"]: x for x in d["variants"]}
assert len(v) >= 8, len(v)
for x in v.values():
    for k in ("layout", "table", "partition", "staging", "granularity", "resources", "sass_loops"):
        assert k in x, (x["name"], k)
o = v["lut8x4.gap5-block.smem-out.t512.b8"]
assert o["layout"] == "df11" and o["resources"] == {"sm_90": {"registers": 31, "spill_store_bytes": 0, "spill_load_bytes": 0, "stack_bytes": 0, "static_smem_bytes": 0}}, o
assert [(l["min_cycle"], l["max_cycle"], l["barrier"]) for l in o["sass_loops"]] == [(30, 51, False), (42, 42, False), (300, 900, True)], o["sass_loops"]
assert not v["lut8x4.gap5-warp.smem-out.t512.b8"]["sass_loops"]  # not in the made-up file
assert d["sass_arch"] == "sm_90" and d["sass_file"].endswith("sass.json"), d
PY
ok variants --resources res.json --sass sass.json
grep -q "instructions per iteration of its thread loops: 30..51 42$" "$scratch/last.out" ||
  fail "df11 variants text: no SASS loops line in $(grep -A3 'lut8x4.gap5-block.smem-out' "$scratch/last.out")"
# --occupancy: shared memory per block on a slice of a synthetic Nemo layer and blocks per SM
# from it, the threads and the registers (made up: 64 registers for lut8x4 limit it to 2 blocks
# of 512 threads; the t256.b16 count decoder's ~37 KB to 6 blocks on sm_90, 4 on sm_80; the
# t512.b16 one fills the 2048 thread slots of sm_90 with 4).
k() { printf '{"name": "void df11::dec::(anonymous namespace)::%s(x)", "arch": "%s", "registers": %s}' "$1" "$2" "$3"; }
p5='(df11::dec::TableKind)5, (df11::dec::Partition)3, (df11::dec::Staging)4'
printf '{"kernels": [%s, %s, %s, %s]}\n' "$(k "$sig" sm_90 64)" \
  "$(k "gap_decode_persistent_kernel<$p5, 256, 16>" sm_90 27)" "$(k "gap_decode_persistent_kernel<$p5, 256, 16>" sm_80 32)" \
  "$(k "gap_decode_persistent_kernel<$p5, 512, 16>" sm_90 28)" >occ.json
ok variants --occupancy --fraction 0.01 --json --resources occ.json --sass sass.json
python3 - "$scratch/last.out" <<'PY' || fail "df11 variants --occupancy: $(head -c 600 "$scratch/last.out")"
import json, sys
v = {x["name"]: x for x in json.load(open(sys.argv[1]))["variants"]}
def occ(name, arch):
    o = v[name]["occupancy"]
    assert 20000 < o["smem_bytes"] < 60000 or name.startswith("lut8x4"), o
    return o[arch]["blocks_per_sm"], o[arch]["occupancy"], o[arch]["limited_by"]
assert occ("lut8x4.gap5-block.smem-out.t512.b8", "sm_90") == (2, 0.5, "registers"), occ("lut8x4.gap5-block.smem-out.t512.b8", "sm_90")
assert occ("multi12.gap5-cnt.exp-smem-v16.t256.b16.persist", "sm_90") == (6, 0.75, "shared memory")
assert occ("multi12.gap5-cnt.exp-smem-v16.t256.b16.persist", "sm_80") == (4, 0.5, "shared memory")
assert occ("multi12.gap5-cnt.exp-smem-v16.t512.b16.persist", "sm_90") == (4, 1.0, "threads")
assert not v["multi12.gap5-warp.exp-smem-v16.t512.b8"]["occupancy"]["sm_90"]["registers_known"]
assert "occupancy" not in v["official-ptx"]
PY
expect_error out "fraction" -- variants --occupancy --fraction 0
expect_error out "--fraction sets the layer --occupancy and --lanes encode" -- variants --fraction 0.1
printf '[]' >empty_list.json
expect_error out "empty_list.json: not a kernel_resources.json" -- variants --resources empty_list.json
printf '{"kernels": 5}' >kernels5.json
expect_error out "kernels5.json: not a kernel_sass.json" -- variants --sass kernels5.json
expect_error out "no_such.json" -- variants --sass no_such.json
printf 'not json' >bad.json
expect_error out "bad.json" "not valid JSON" -- variants --resources bad.json

# Signals and limits. An interrupted write leaves no output and no OUT.tmp-*, also when the signal
# comes twice (timeout sends SIGTERM to the child and to its group); a write past `ulimit -f`
# fails with a message, not SIGXFSZ; an OUT.tmp-PID that a killed process of this host left is
# removed by the next writer of OUT, while a live process's or an unmarked one stays.
ok synth big --arch tiny --layers 12 --vocab 65536 --seed 1
for sig in TERM HUP INT; do
  "$df11" compress --threads 1 big sigout >/dev/null 2>sig.err &
  pid=$!
  # Once its temporary directory is there, its handler is too (installed before the write starts).
  for _ in $(seq 1000); do
    compgen -G "sigout.tmp-*" >/dev/null && break
    sleep 0.01
  done
  kill -"$sig" "$pid"
  [[ $sig == INT ]] || { sleep 0.005; kill -"$sig" "$pid"; }  # a second Ctrl-C kills at once, by design
  wait "$pid"
  rc=$?
  grep -q "interrupted by signal" sig.err || fail "SIG$sig: compress was not interrupted (rc $rc): $(cat sig.err)"
  ((rc != 0)) || fail "SIG$sig: compress exited 0"
  [[ ! -e sigout ]] && ! compgen -G "sigout.tmp-*" >/dev/null || fail "SIG$sig: left $(ls -d sigout* 2>/dev/null)"
done
(ulimit -f 1000; "$df11" compress big fsz >/dev/null 2>fsz.err)
rc=$?
((rc == 1)) && grep -q "File too large" fsz.err || fail "compress past ulimit -f: rc $rc, $(cat fsz.err)"
[[ ! -e fsz ]] && ! compgen -G "fsz.tmp-*" >/dev/null || fail "compress past ulimit -f left $(ls -d fsz* 2>/dev/null)"
sh -c 'exit 0' &
dead=$!
wait "$dead"
sh -c 'exit 0' &
dead2=$!
wait "$dead2"
mkdir "stale.tmp-$dead" "stale.tmp-$$" "stale.tmp-1$dead" "stale.tmp-$dead2"
me="$(uname -n)/$(readlink /proc/self/ns/pid)"  # host and PID namespace, as the marker has them
echo "$me $dead" >"stale.tmp-$dead/.df11-incomplete"
echo "$me $$" >"stale.tmp-$$/.df11-incomplete"  # this shell: alive
echo "$(uname -n)/pid:[1] $dead2" >"stale.tmp-$dead2/.df11-incomplete"  # another PID namespace's
ok compress big stale
grep -q "removed ./stale.tmp-$dead, left unfinished by process $dead" last.err || fail "no note of the stale directory: $(cat last.err)"
[[ ! -e stale.tmp-$dead ]] || fail "stale.tmp-$dead (a dead process's) was not removed"
[[ -d stale.tmp-$$ && -d stale.tmp-1$dead && -d stale.tmp-$dead2 ]] ||
  fail "a live process's, an unmarked or another PID namespace's temporary directory was removed"
[[ ! -e stale/.df11-incomplete && -f stale/config.json ]] || fail "the finished output holds the marker, or no config.json"
rm -rf big stale stale.tmp-* sig.err fsz.err

if ((failures > 0)); then
  echo "$failures check(s) failed"
  exit 1
fi
echo "all df11 CLI checks passed"
rm -rf "$scratch"
