from edgefa.app.cli import main

raise SystemExit(main())
