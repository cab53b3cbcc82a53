INSERT INTO greetings (text) VALUES ('Hello, world'), ('Hej, världen');
