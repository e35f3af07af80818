-- Sign-in through an identity provider (Google, or any OpenID Connect provider): the
-- provider's stable subject id, linked to one account. An account is found by (issuer,
-- subject), never by e-mail alone: an address can change hands, and a password account's
-- address was never proven, so a provider vouching for it does not make it the same person.
CREATE TABLE user_identities (
    issuer          text NOT NULL,
    subject         text NOT NULL,
    user_id         uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    -- The address the provider vouched for at the last sign-in (shown in the export).
    email           text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    last_sign_in_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (issuer, subject)
);
CREATE INDEX user_identities_user ON user_identities (user_id);
