from syncd.commands.cli import main

raise SystemExit(main())
