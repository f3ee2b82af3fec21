"""Work pool, queue and limit set-up, deployments, and the client API the app calls."""
