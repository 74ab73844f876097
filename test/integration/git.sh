#!/usr/bin/env bash
# git under the preload: init, a dozen commits over a few hundred files,
# a branch with its own commits merged back, log/diff/blame/grep/archive,
# gc and a full threaded repack, fsck. With fixed dates and identities every
# object id is deterministic, so the whole report (commit ids, trees, log,
# fsck, archive checksum) must equal the one from a run without preload.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh" "$@"
pz_require_cmd git awk

cat >scenario.sh <<'EOF'
set -euo pipefail
repo=$1
export HOME="$PWD/home.$(basename "$repo")" GIT_CONFIG_NOSYSTEM=1
mkdir -p "$HOME"
export GIT_AUTHOR_NAME="Pre Zero" GIT_AUTHOR_EMAIL="pz@example.org"
export GIT_COMMITTER_NAME="Pre Zero" GIT_COMMITTER_EMAIL="pz@example.org"
export TZ=UTC LC_ALL=C
git config --global init.defaultBranch main
git config --global gc.auto 0
git config --global core.compression 6
git init -q "$repo"
cd "$repo"

t=1700000000
commit() {  # commit MESSAGE
  t=$((t + 3600))
  GIT_AUTHOR_DATE="@$t +0000" GIT_COMMITTER_DATE="@$t +0000" git commit -q -m "$1"
}

# gen SEED NFILES FIRST: (re)write files dir<k>/file<i>.txt, i in FIRST..FIRST+NFILES-1
gen() {
  awk -v seed="$1" -v n="$2" -v first="$3" 'BEGIN {
    x = seed
    for (i = first; i < first + n; i++) {
      f = sprintf("dir%d/file%03d.txt", i % 7, i)
      system("mkdir -p dir" (i % 7))
      lines = 40 + (i * 13) % 160
      for (l = 0; l < lines; l++) {
        x = (x * 1103515245 + 12345) % 2147483648
        printf("line %d of file %d: value %d %s\n", l, i, x, (l % 5 ? "common text that compresses well" : "seed " seed)) > f
      }
      close(f)
    }
  }'
}

gen 1 300 0
git add -A
commit "initial import"
for c in 2 3 4 5 6 7 8; do
  gen "$c" 40 $(( (c * 37) % 260 ))           # rewrite 40 files
  gen "$c" 5 $(( 300 + c * 5 ))               # add 5 new ones
  [ "$c" -eq 5 ] && git rm -q dir1/file001.txt dir2/file002.txt
  git add -A
  commit "change $c"
done

git checkout -q -b feature
for c in 11 12 13; do
  gen "$c" 3 $(( 400 + c * 3 ))               # files only the branch touches
  git add -A
  commit "feature $c"
done
git checkout -q main
for c in 21 22; do
  gen "$c" 10 $(( 200 + c ))
  git add -A
  commit "main after branch $c"
done
t=$((t + 3600))
GIT_AUTHOR_DATE="@$t +0000" GIT_COMMITTER_DATE="@$t +0000" \
  git merge -q --no-ff -m "merge feature" feature

echo "== heads"
git rev-parse HEAD HEAD^{tree} feature main
echo "== log count: $(git log --oneline | wc -l)"
echo "== log"
git log --format='%H %P %s' --topo-order
echo "== log -p digest: $(git log -p --stat | sha256sum | cut -c1-16)"
echo "== diff first..HEAD: $(git diff --stat "$(git rev-list --max-parents=0 HEAD)" HEAD | tail -n 1)"
echo "== blame digest: $(git blame -s dir3/file003.txt | sha256sum | cut -c1-16)"
echo "== grep count: $(git grep -c 'seed 13' | wc -l)"
echo "== show content: $(git show HEAD:dir0/file434.txt | head -n 2 | tail -n 1)"

git gc -q
git repack -q -a -d -f --window=50 --depth=20 --threads=2
git prune-packed
echo "== count-objects"
git count-objects -v | grep -E '^(count|in-pack|packs|garbage):'
echo "== verify-pack"
for p in .git/objects/pack/*.idx; do git verify-pack "$p" >/dev/null && echo ok; done
echo "== fsck"
git fsck --full --strict --no-dangling 2>&1
echo "== fsck rc $?"
echo "== archive digest: $(git archive --format=tar HEAD | sha256sum | cut -c1-16)"
echo "== worktree clean: $(git status --porcelain | wc -l)"
# Content check: a fresh clone checks out exactly the same files.
git clone -q --no-local . "../clone.$(basename "$repo")"
echo "== clone tree: $(cd "../clone.$(basename "$repo")" && git ls-files -s | sha256sum | cut -c1-16) $(git ls-files -s | sha256sum | cut -c1-16)"
diff -r -x .git . "../clone.$(basename "$repo")" && echo "== clone files identical"
EOF

pz_ref git bash scenario.sh repo-ref >ref.out
pz_run git bash scenario.sh repo-pz >pz.out
pz_compare_files "git report" ref.out pz.out

count="$(sed -n 's/^== log count: //p' pz.out)"
pz_compare_str "git log --oneline | wc -l" 14 "$count"
grep -qx "== fsck rc 0" pz.out || pz_fail "git fsck failed: $(sed -n '/^== fsck$/,/^== fsck rc/p' pz.out)"
grep -qx "== clone files identical" pz.out || pz_fail "clone differs from the repository"
# The repository written under the preload must also be sound for a git
# that does not use it.
(cd repo-pz && env -u LD_PRELOAD git fsck --full --strict --no-dangling >/dev/null 2>&1) ||
  pz_fail "git fsck (without preload) of the repository written with the preload failed"
pz_pass "14 commits, object ids and fsck identical"
