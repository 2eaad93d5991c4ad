from edgefa.cli import main

raise SystemExit(main())
