-- The event log's sequence must hand out numbers one at a time, in the order
-- writers take the ordering lock (see key_events_assign_seq in 0001). With a
-- per-session cache (CACHE > 1) a session would draw from numbers it
-- reserved earlier, so a later commit could carry a lower number than one a
-- follower has already read, and the follower would skip it. CACHE 1 is the
-- default; this makes it explicit, so nobody "tunes" it.
ALTER SEQUENCE key_events_seq CACHE 1;
