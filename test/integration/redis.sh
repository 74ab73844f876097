#!/usr/bin/env bash
# redis-server under the preload, driven over loopback: redis-benchmark
# (SET, GET, INCR, LPUSH, LPOP, SADD, HSET, MSET with 100-byte to 4 KiB
# values, 20 parallel clients), then a known data set written and read back
# through redis-cli (strings, lists, hashes, a large value, deletes, an
# expiring key), DEBUG-free integrity checks (DBSIZE, STRLEN, LRANGE, HGETALL
# digests), and a SAVE whose RDB file must load into a server without the
# preload with the same contents. The server must still answer at the end.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh" "$@"
pz_require_cmd redis-server redis-cli redis-benchmark

port=$((20000 + RANDOM % 20000))
start_server() { # MODE PORT DIR
  local mode=$1 p=$2 dir=$3 pre=()
  [ "$mode" = pz ] && pre=(env "LD_PRELOAD=$PZ_LIB")
  [ "$mode" = ref ] && pre=(env -u LD_PRELOAD)
  "${pre[@]}" redis-server --port "$p" --bind 127.0.0.1 --save '' --appendonly no \
    --dir "$dir" --dbfilename dump.rdb --daemonize no --protected-mode yes \
    >"$PZ_WORK/redis.$mode.log" 2>&1 &
  echo $!
}
cli() { env -u LD_PRELOAD redis-cli -p "$1" "${@:2}"; }
wait_up() {
  for _ in $(seq 1 100); do
    [ "$(cli "$1" PING 2>/dev/null)" = PONG ] && return 0
    sleep 0.1
  done
  return 1
}

mkdir -p pzdir refdir
spid=$(start_server pz "$port" "$PZ_WORK/pzdir")
trap 'kill $spid 2>/dev/null || true; kill ${rpid:-} 2>/dev/null || true' EXIT
wait_up "$port" || pz_fail "redis-server with the preload did not come up: $(tail -5 "$PZ_WORK/redis.pz.log")"
grep -q "$PZ_LIB" "/proc/$spid/maps" || pz_fail "libprezero is not mapped into redis-server"

env -u LD_PRELOAD timeout 120 redis-benchmark -p "$port" -q -c 20 -n 20000 -r 50000 -d 512 \
  -t set,get,incr,lpush,lpop,sadd,hset,mset >bench.out 2>&1 || pz_fail "redis-benchmark failed: $(tail -5 bench.out)"
env -u LD_PRELOAD timeout 120 redis-benchmark -p "$port" -q -c 8 -n 5000 -r 1000 -d 4096 -t set,get \
  >>bench.out 2>&1 || pz_fail "redis-benchmark (4 KiB values) failed"
kill -0 "$spid" 2>/dev/null || pz_fail "redis-server died under redis-benchmark: $(tail -5 "$PZ_WORK/redis.pz.log")"
cli "$port" FLUSHALL >/dev/null

# A known data set, written and read back.
{
  for i in $(seq 1 3000); do echo "SET key:$i value-$i-$(printf '%0*d' $((i % 300)) 0)"; done
  for i in $(seq 1 500); do echo "RPUSH list:$((i % 7)) item-$i"; done
  for i in $(seq 1 800); do echo "HSET hash:$((i % 11)) field$i v$((i * 7))"; done
  echo "SET big $(head -c 300000 /dev/zero | tr '\0' 'x')"
  for i in $(seq 1 7 3000); do echo "DEL key:$i"; done
  echo "SET temp 1 PX 100"
} | cli "$port" >/dev/null
sleep 0.3
digest() { # PORT: a digest of the whole data set
  local p=$1
  {
    cli "$p" DBSIZE
    for i in $(seq 1 13 3000); do cli "$p" GET "key:$i"; done
    for l in $(seq 0 6); do cli "$p" LRANGE "list:$l" 0 -1; done
    for h in $(seq 0 10); do cli "$p" HGETALL "hash:$h" | paste - - | sort; done
    cli "$p" STRLEN big
    cli "$p" EXISTS temp
  } | env -u LD_PRELOAD sha256sum | cut -d' ' -f1
}
got=$(digest "$port")
n=$(cli "$port" DBSIZE)
pz_compare_str "keys after the writes" 2590 "$n" # 3000 - 429 deleted + 7 lists + 11 hashes + big
cli "$port" SAVE >/dev/null
cp pzdir/dump.rdb refdir/dump.rdb

# The RDB written by the preloaded server loads into a plain one with the same contents.
rport=$((port + 1))
rpid=$(start_server ref "$rport" "$PZ_WORK/refdir")
wait_up "$rport" || pz_fail "reference redis-server did not come up"
want=$(digest "$rport")
pz_compare_str "data set digest (preloaded server vs its RDB loaded without preload)" "$want" "$got"
[ "$(cli "$port" PING)" = PONG ] || pz_fail "redis-server with the preload stopped answering"
pz_pass "$(grep -c 'requests per second' bench.out) benchmark runs, $n keys, digest ${got:0:12}"
