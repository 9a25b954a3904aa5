import sys

from om_pipeline.testing.fake_ais_bench import main

sys.exit(main(sys.argv[1:]))
