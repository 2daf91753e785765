// Named crash points for fault-injection tests (STYLE.md: io_uring bypasses
// LD_PRELOAD shims, so faults are injected behind our own interfaces).
//
// RINGQ_CRASH_POINT=name[:n] makes the n-th (default first) pass through the
// point named `name` kill the process with SIGKILL, exactly like kill -9.
// Unset (always, outside tests), a point costs one predictable branch.
//
// Points: wal_after_write_before_sync, wal_after_sync_before_reply,
// wal_mid_roll, checkpoint_before_write, checkpoint_after_write_before_flush,
// recovery_after_flush_before_delete.
#pragma once

namespace ringq::uring {

bool CrashPointArmed();
// Kills the process if `name` is the armed point and its count is reached.
// `detail` is printed first (for example the unsynced byte range).
void CrashPointSlow(const char* name, const char* detail);

inline void CrashPoint(const char* name, const char* detail = "") {
  if (__builtin_expect(CrashPointArmed(), 0)) CrashPointSlow(name, detail);
}

}  // namespace ringq::uring
