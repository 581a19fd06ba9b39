-- The deployment's default model (the one a request that names none gets), recorded once for
-- every API process and worker over this database: an explicit models.default_model, or the model
-- the first worker chose for its hardware (explicit = 0). deployment.py says who may change it.
CREATE TABLE default_model (
    id       INTEGER PRIMARY KEY CHECK (id = 1),
    label    TEXT NOT NULL,     -- "Name:Version"
    explicit INTEGER NOT NULL,  -- 1: configured (models.default_model, --set-default); 0: chosen for hardware
    origin   TEXT NOT NULL,     -- the setting that named it, or why the hardware chose it
    set_by   TEXT NOT NULL,     -- the process that recorded it, e.g. "worker gpu-1:4242"
    set_at   DOUBLE PRECISION NOT NULL
);
