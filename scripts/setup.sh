#!/usr/bin/env bash
# HotRestore setup: everything the project needs on this machine, each step skipped when done.
#
#   bash scripts/setup.sh [--quiet] [--browser]
#     --quiet    print only when doing work or failing
#     --browser  also Debian's chromium (the web page's browser test, run by `npm test`)
#
# Steps:
#   apt    Debian packages: qemu-system-x86, qemu-utils, busybox-static, gcc, libc6-dev, gzip
#          (+ chromium with --browser)
#   npm    `npm ci` when node_modules is missing or older than package-lock.json
#   kernel the package linux-image-amd64 depends on, downloaded with `apt-get download` and
#          extracted (dpkg -x) into $CACHE/kernel-pkg/, kept across guest rebuilds
#   native host-side helpers from native/*.c (qemu-no-thp.so, for kernel-paged QEMUs), built with
#          gcc into $CACHE/native/ when the hash of native/ differs from the one recorded there
#   guest  the guest image, built by guest/build.sh when the hash of guest/ + this script differs
#          from the one recorded in guest.json
# Cache ($CACHE = ${HOTRESTORE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/hotrestore}):
#   kernel-pkg/                  extracted kernel package (+ .package, .version); pinned once
#                                downloaded: delete it to move to a newer Debian kernel
#   images/<hash>-<time>-<pid>/  a built image: vmlinuz, initramfs.cpio.gz, guest.json
#   guest -> images/<that>       symlink swapped atomically (rename) after a complete build
#   native/                      host helpers (+ .hash), replaced whole after a complete build
#   .setup.lock                  flock: concurrent setups wait for each other
# Every failure prints `setup: step <name> failed: <what> — <how to fix>` and exits non-zero.
set -euo pipefail

quiet=0
browser=0
for arg in "$@"; do
  case "$arg" in
    --quiet | -q) quiet=1 ;;
    --browser) browser=1 ;;
    -h | --help)
      awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"
      exit 0
      ;;
    *)
      echo "setup: unknown argument '$arg' (usage: setup.sh [--quiet] [--browser])" >&2
      exit 2
      ;;
  esac
done

script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$script_dir/.." && pwd)
cache=${HOTRESTORE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/hotrestore}

step=init
say() { [ "$quiet" = 1 ] || echo "setup: $*"; }
work() { echo "setup: $*"; } # doing real work: always shown
failed_reported=
fail() { # fail WHAT HOW
  echo "setup: step $step failed: $1 — $2" >&2
  failed_reported=1
  exit 1
}
err_line=?
trap 'err_line=$LINENO' ERR
on_exit() {
  local rc=$?
  if [ "$rc" != 0 ] && [ -z "$failed_reported" ]; then
    echo "setup: step $step failed: command exited $rc at scripts/setup.sh line $err_line — rerun 'bash scripts/setup.sh' and read the output above" >&2
  fi
}
trap on_exit EXIT

as_root() {
  if [ "$(id -u)" = 0 ]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    return 1
  fi
}

# ---------------------------------------------------------------- apt
step=apt
apt_packages=(qemu-system-x86 qemu-utils busybox-static gcc libc6-dev gzip)
[ "$browser" = 0 ] || apt_packages+=(chromium)
missing=()
for pkg in "${apt_packages[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
  [ "$status" = "install ok installed" ] || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  work "installing ${missing[*]} (apt)"
  log=$(mktemp)
  if ! as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q >"$log" 2>&1; then
    tail -n 20 "$log" >&2
    fail "apt-get update" "check network access to the Debian mirrors, or run as root / with sudo"
  fi
  if ! as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" \
    >"$log" 2>&1; then
    tail -n 20 "$log" >&2
    fail "apt-get install ${missing[*]}" "run it by hand as root and read apt's message"
  fi
  rm -f "$log"
else
  say "apt packages present"
fi

# ---------------------------------------------------------------- npm
step=npm
if [ -f "$repo/package-lock.json" ]; then
  if [ ! -f "$repo/node_modules/.package-lock.json" ] ||
    [ "$repo/package-lock.json" -nt "$repo/node_modules/.package-lock.json" ]; then
    work "npm ci"
    command -v npm >/dev/null 2>&1 || { fail "npm not found" "install Node.js 20 or later"; }
    if ! (cd "$repo" && npm ci --no-audit --no-fund --loglevel=error); then
      fail "npm ci" "read npm's message above; check access to the npm registry"
    fi
  else
    say "node_modules up to date"
  fi
fi

# ---------------------------------------------------------------- kernel + guest (under a lock)
step=cache
mkdir -p "$cache" || { fail "cannot create $cache" "set HOTRESTORE_CACHE to a writable directory"; }
exec 9>"$cache/.setup.lock"
if command -v flock >/dev/null 2>&1; then flock 9; fi

step=kernel
kpkg=$cache/kernel-pkg
resolve_kernel_package() { # the versioned package that linux-image-amd64 depends on
  { apt-cache depends linux-image-amd64 2>/dev/null || true; } |
    sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*\)$/\1/p' | sed -n 1p
}
rm -rf "$cache"/.kernel-dl.* "$cache"/images/.build-* # leftovers of an interrupted run (we hold the lock)
if [ ! -f "$kpkg/.complete" ]; then
  kernel_package=$(resolve_kernel_package)
  if [ -z "$kernel_package" ]; then
    work "apt-get update (to resolve linux-image-amd64)"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null 2>&1 || true
    kernel_package=$(resolve_kernel_package)
  fi
  [ -n "$kernel_package" ] || { fail "cannot resolve the package linux-image-amd64 depends on" "run 'apt-get update' as root, then retry"; }
  work "downloading $kernel_package"
  dl=$(mktemp -d "$cache/.kernel-dl.XXXXXX")
  if ! (cd "$dl" && apt-get download -q "$kernel_package" >"$dl/log" 2>&1); then
    tail -n 20 "$dl/log" >&2
    rm -rf "$dl"
    fail "apt-get download $kernel_package" "check access to the Debian mirrors ('apt-get update' first)"
  fi
  deb=$(find "$dl" -maxdepth 1 -name '*.deb' | sed -n 1p)
  mkdir "$dl/x"
  if ! dpkg -x "$deb" "$dl/x"; then
    rm -rf "$dl"
    fail "dpkg -x $deb" "free disk space in $cache and retry"
  fi
  echo "$kernel_package" >"$dl/x/.package"
  dpkg-deb -f "$deb" Version >"$dl/x/.version"
  touch "$dl/x/.complete"
  rm -rf "$kpkg"
  mv "$dl/x" "$kpkg"
  rm -rf "$dl"
else
  say "kernel package cached ($(cat "$kpkg/.package" 2>/dev/null || echo unknown))"
fi

step=native
native_hash=$(
  cd "$repo"
  find native -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16
)
native=$cache/native
if [ "$(cat "$native/.hash" 2>/dev/null || true)" != "$native_hash" ] || [ ! -s "$native/qemu-no-thp.so" ]; then
  work "building host helpers $native_hash"
  staging=$cache/.native-$$
  rm -rf "$staging"
  mkdir -p "$staging"
  gcc -O2 -Wall -Werror -shared -fPIC -o "$staging/qemu-no-thp.so" "$repo/native/qemu-no-thp.c" ||
    { rm -rf "$staging"; fail "gcc native/qemu-no-thp.c" "apt-get install gcc libc6-dev, then rerun scripts/setup.sh"; }
  echo "$native_hash" >"$staging/.hash"
  # A QEMU still running with the old library keeps its mapping of the deleted file.
  rm -rf "$native.old"
  if [ -d "$native" ]; then mv "$native" "$native.old"; fi
  mv "$staging" "$native"
  rm -rf "$native.old"
else
  say "host helpers up to date ($native_hash)"
fi

step=guest
inputs_hash=$(
  cd "$repo"
  {
    find guest -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum
    sha256sum scripts/setup.sh
    cat "$kpkg/.package" "$kpkg/.version" 2>/dev/null || true
  } | sha256sum | cut -c1-16
)
guest=$cache/guest
current_hash=$(sed -n 's/^ *"inputsHash": *"\([^"]*\)".*/\1/p' "$guest/guest.json" 2>/dev/null || true)
if [ "$current_hash" != "$inputs_hash" ] ||
  [ ! -s "$guest/vmlinuz" ] || [ ! -s "$guest/initramfs.cpio.gz" ]; then
  work "building guest image $inputs_hash"
  mkdir -p "$cache/images"
  staging=$cache/images/.build-$inputs_hash-$$
  rm -rf "$staging"
  if ! bash "$repo/guest/build.sh" "$kpkg" "$staging" "$inputs_hash"; then
    rm -rf "$staging"
    fail "guest/build.sh" "read its message above (needs gcc, libc6-dev, busybox-static)"
  fi
  # A fresh name every build, so the link always flips between two complete images.
  image_id=$inputs_hash-$(date +%s)-$$
  final=$cache/images/$image_id
  mv "$staging" "$final"
  ln -sfn "images/$image_id" "$cache/.guest-link-$$"
  if [ -d "$guest" ] && [ ! -L "$guest" ]; then rm -rf "$guest"; fi
  mv -T "$cache/.guest-link-$$" "$guest"
  # Older images are no longer referenced (a QEMU still using one keeps its open files).
  for old in "$cache"/images/*; do
    [ "$old" = "$final" ] || rm -rf "$old"
  done
  say "guest image ready in $guest"
else
  say "guest image up to date ($inputs_hash)"
fi

step=check
for file in vmlinuz initramfs.cpio.gz guest.json; do
  [ -s "$guest/$file" ] || { fail "$guest/$file missing" "delete $cache and rerun scripts/setup.sh"; }
done
command -v qemu-system-x86_64 >/dev/null 2>&1 || { fail "qemu-system-x86_64 not on PATH" "apt-get install qemu-system-x86"; }
command -v qemu-img >/dev/null 2>&1 || { fail "qemu-img not on PATH" "apt-get install qemu-utils"; }
say "ready"
