-- The embedded store's schema, version 4 (PostgreSQL's version 4 is the same).

-- Each device's last heartbeat, as sent (JSON), with when it arrived. One row per device,
-- replaced by the next heartbeat.
CREATE TABLE heartbeats (
    device_id   TEXT PRIMARY KEY,
    received_at TEXT NOT NULL,
    sent_at     TEXT NOT NULL,
    body        TEXT NOT NULL
);

-- Commands an admin left for a device, handed to it with each heartbeat's answer until it
-- reports them done.
CREATE TABLE device_commands (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    device_id  TEXT NOT NULL,
    action     TEXT NOT NULL,   -- the command as JSON (`DeviceAction`)
    created_at TEXT NOT NULL,
    created_by TEXT NOT NULL,
    done_at    TEXT
);
CREATE INDEX device_commands_pending ON device_commands (device_id, done_at);

-- A device's newest frame, for when it was last heard from by frame.
CREATE INDEX frames_device_received ON frames (device_id, received_at);
