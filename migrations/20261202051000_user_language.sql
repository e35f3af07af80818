-- The language a user reads (issue 12: a failed payment is told in chat in it). Set from the
-- dashboard: the language of the sign-up or sign-in page, and the user's switch of it. NULL:
-- not known, English.
ALTER TABLE users ADD COLUMN lang text CHECK (lang IN ('en', 'ru'));
