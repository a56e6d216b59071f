// Types of client.js.
