-- A team's preferences, a JSON object (null: none set), as Appwrite's teams have.
ALTER TABLE teams ADD COLUMN prefs BLOB NULL;
