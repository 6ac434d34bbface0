-- Where a session was opened from, for the sessions list a user reviews:
-- the client's address (as the gateway reports it) and its user agent.
ALTER TABLE sessions ADD COLUMN ip TEXT;
ALTER TABLE sessions ADD COLUMN user_agent TEXT;
