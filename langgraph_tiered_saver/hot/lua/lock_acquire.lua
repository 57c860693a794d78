-- Take the thread's run lock. Returns the new fencing token, or false if held (take_lock).
return take_lock(ARG.token, ARG.ttl_ms, ARG.thread_ttl_ms)
