-- The PostgreSQL store's schema, version 4 (the embedded store's version 4 is the same).

-- Each device's last heartbeat, as sent (JSON), with when it arrived. One row per device,
-- replaced by the next heartbeat.
CREATE TABLE heartbeats (
    device_id   text PRIMARY KEY,
    received_at timestamptz NOT NULL,
    sent_at     timestamptz NOT NULL,
    body        jsonb NOT NULL
);

-- Commands an admin left for a device, handed to it with each heartbeat's answer until it
-- reports them done.
CREATE TABLE device_commands (
    id         bigserial PRIMARY KEY,
    device_id  text NOT NULL,
    action     jsonb NOT NULL,   -- the command as JSON (`DeviceAction`)
    created_at timestamptz NOT NULL,
    created_by text NOT NULL,
    done_at    timestamptz
);
CREATE INDEX device_commands_pending ON device_commands (device_id, done_at);

-- A device's newest frame, for when it was last heard from by frame.
CREATE INDEX frames_device_received ON frames (device_id, received_at);
