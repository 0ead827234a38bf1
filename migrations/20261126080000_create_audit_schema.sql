-- The gateway's tables live in their own schema, so that grants to the
-- gateway and to security readers can be given schema-wide and nothing else.
CREATE SCHEMA IF NOT EXISTS audit;
