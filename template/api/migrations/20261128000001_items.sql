-- Items: the reference resource. Ids are UUIDv7, so their order is creation
-- order and keyset pagination needs no second column.
CREATE TABLE items (
    id                 uuid PRIMARY KEY,
    name               text        NOT NULL CHECK (char_length(name) BETWEEN 1 AND 200),
    description        text        CHECK (description IS NULL OR char_length(description) <= 2000),
    price_amount_minor bigint      NOT NULL CHECK (price_amount_minor >= 0),
    currency           text        NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    -- Optimistic concurrency: bumped by every update, exposed as the ETag.
    version            bigint      NOT NULL DEFAULT 1,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now()
);
