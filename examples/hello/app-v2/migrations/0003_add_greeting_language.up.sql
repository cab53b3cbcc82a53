ALTER TABLE greetings ADD COLUMN language TEXT NOT NULL DEFAULT 'en';
UPDATE greetings SET language = 'sv' WHERE text LIKE 'Hej%';
