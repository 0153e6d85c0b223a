# Sourced by scripts/test.sh: apt-get that waits for a lock held by another apt/dpkg process (bounded)
# instead of failing with exit 100 before any test ran, and service-less package installs.

# apt_get ARGS...: DEBIAN_FRONTEND=noninteractive apt-get -qq ARGS; while another apt or dpkg holds its
# lock, wait (apt's own DPkg::Lock::Timeout, then up to APT_LOCK_TRIES more rounds of APT_LOCK_SLEEP s).
apt_get() {
  local tries=0 err
  while :; do
    if err=$(DEBIAN_FRONTEND=noninteractive apt-get -qq -o DPkg::Lock::Timeout="${APT_LOCK_TIMEOUT:-60}" "$@" 2>&1 >/dev/null); then
      return 0
    fi
    case "$err" in
      *"Could not get lock"* | *"Unable to acquire"* | *"is another process using it"* | *"Unable to lock"*) ;;
      *) printf '%s\n' "$err" >&2; return 1 ;;
    esac
    tries=$((tries + 1))
    if [ "$tries" -ge "${APT_LOCK_TRIES:-20}" ]; then
      printf '%s\n' "$err" >&2
      echo "apt: the lock is still held after $tries tries; giving up" >&2
      return 1
    fi
    echo "apt: another apt/dpkg process holds the lock; waiting (try $tries of ${APT_LOCK_TRIES:-20})" >&2
    sleep "${APT_LOCK_SLEEP:-10}"
  done
}

# apt_install_quiet PACKAGE...: install without starting or enabling the packages' system services
# (the tests start their own servers on free ports); an existing policy-rc.d is kept as it is.
apt_install_quiet() {
  local policy=/usr/sbin/policy-rc.d made=0 pkg
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && made=1
  fi
  local rc=0
  if apt_get update && apt_get install -y --no-install-recommends "$@"; then rc=0; else rc=$?; fi
  [ "$made" = 1 ] && rm -f "$policy"
  for pkg in "$@"; do service_off "$pkg"; done
  return "$rc"
}

# service_off NAME: a package's system service neither running nor enabled (systemd and SysV links)
service_off() {
  if [ -e "/lib/systemd/system/$1.service" ] || [ -e "/etc/init.d/$1" ]; then
    if command -v systemctl >/dev/null 2>&1; then
      systemctl disable --now "$1" >/dev/null 2>&1 || systemctl disable "$1" >/dev/null 2>&1 || true
    fi
    if [ -e "/etc/init.d/$1" ]; then
      service "$1" stop >/dev/null 2>&1 || true
      update-rc.d "$1" disable >/dev/null 2>&1 || true
    fi
  fi
}
