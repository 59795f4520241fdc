from agent_client.cli import main

raise SystemExit(main())
