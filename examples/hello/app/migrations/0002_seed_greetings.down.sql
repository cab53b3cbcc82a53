DELETE FROM greetings WHERE text IN ('Hello, world', 'Hej, världen');
