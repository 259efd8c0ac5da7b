-- Collections (tenancy): every key belongs to one collection and sees its subjects only. A
-- subject of collection c is stored as c || chr(31) || its id (the default collection, '', as
-- the id alone), so every existing query stays within one collection by the id it is given; the
-- stored id may be up to 64 + 1 + 255 bytes.
ALTER TABLE api_keys
    ADD COLUMN collection text NOT NULL DEFAULT ''
    CHECK (collection ~ '^[A-Za-z0-9._-]{0,64}$');
ALTER TABLE subjects DROP CONSTRAINT subjects_subject_check;
ALTER TABLE subjects ADD CONSTRAINT subjects_subject_check
    CHECK (octet_length(subject) BETWEEN 1 AND 320);
