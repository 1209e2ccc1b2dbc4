from amphora_agent.main import main

raise SystemExit(main())
